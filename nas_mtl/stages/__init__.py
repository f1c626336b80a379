"""The stages of the main job: search, derive, retrain, and what they share (the training
loop, checkpoints, the search's constraints, the random-architecture control)."""
