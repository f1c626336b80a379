"""Pictures of a search: task subgraphs, allocation heatmaps, curves, task similarity.

Every function takes finished results (a routing graph, a search log, a clustering) and writes
PNG and SVG files; none trains anything. Matplotlib runs headless (the Agg backend).
"""
