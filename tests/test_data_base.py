from __future__ import annotations

import numpy as np
import pytest
import torch

from nas_mtl.data import (
    MultiTaskData,
    PerTaskSplit,
    SharedSplit,
    from_per_task_arrays,
    per_task_batches,
    shared_batches,
    task_batches,
)
from nas_mtl.errors import ConfigError, DataError
from nas_mtl.tasks import TaskSpec

NAN = float("nan")


def shared(n: int, t: int = 2, d: int = 3) -> SharedSplit:
    x = torch.arange(n * d, dtype=torch.float32).reshape(n, d)
    y = (torch.arange(n * t).reshape(n, t) % 2).float()
    return SharedSplit(x, y)


def shared_data(n: int = 10) -> MultiTaskData:
    tasks = (TaskSpec("a", "binary"), TaskSpec("b", "binary"))
    return MultiTaskData("toy", tasks, (3,), shared(n), shared(4), shared(4))


def per_task(sizes: tuple[int, ...]) -> PerTaskSplit:
    xs = tuple(torch.full((n, 1, 2, 2), float(t)) for t, n in enumerate(sizes))
    ys = tuple(torch.arange(n, dtype=torch.float32) % 2 for n in sizes)
    return PerTaskSplit(xs, ys)


def test_shared_data_properties() -> None:
    data = shared_data()
    assert data.regime == "shared"
    assert data.task_names == ("a", "b")
    assert data.summary() == (
        "toy: shared inputs, 2 tasks (a, b), input (3,), train/val/test 10/4/4 rows"
    )


def test_per_task_summary() -> None:
    tasks = (TaskSpec("a", "binary"), TaskSpec("b", "binary"))
    data = MultiTaskData(
        "pt", tasks, (1, 2, 2), per_task((5, 3)), per_task((2, 2)), per_task((1, 1))
    )
    assert data.regime == "per_task"
    assert data.summary().endswith("train/val/test 8/4/2 examples over all tasks")


def test_validation_errors() -> None:
    tasks = (TaskSpec("a", "binary"), TaskSpec("b", "binary"))
    with pytest.raises(DataError, match="all splits must be SharedSplit or all PerTaskSplit"):
        MultiTaskData("x", tasks, (3,), shared(4), per_task((2, 2)), shared(4))
    with pytest.raises(
        DataError, match=r"inputs have shape \(3,\) per example, expected input_shape \(4,\)"
    ):
        MultiTaskData("x", tasks, (4,), shared(4), shared(4), shared(4))
    with pytest.raises(DataError, match="3 label columns/tensors for 2 tasks"):
        MultiTaskData("x", tasks, (3,), shared(4, t=3), shared(4), shared(4))
    bad = shared(4)
    bad.y[0, 1] = 2.0
    with pytest.raises(
        DataError, match=r"val split: binary task 'b' has labels other than 0/1, e.g. \[2.0\]"
    ):
        MultiTaskData("x", tasks, (3,), shared(4), bad, shared(4))
    no_labels = shared(4)
    no_labels.y[:, 0] = NAN
    with pytest.raises(DataError, match="task 'a' has no labels in the training split"):
        MultiTaskData("x", tasks, (3,), no_labels, shared(4), shared(4))
    with pytest.raises(ConfigError, match=r"task names must be unique, repeated: \['a'\]"):
        MultiTaskData("x", (tasks[0], tasks[0]), (3,), shared(4), shared(4), shared(4))
    multi = (TaskSpec("m", "multiclass", n_classes=2), tasks[1])
    frac = shared(4)
    frac.y[1, 0] = 0.5
    with pytest.raises(DataError, match=r"labels that are not integers in 0..1, e.g. \[0.5\]"):
        MultiTaskData("x", multi, (3,), frac, shared(4), shared(4))


def test_split_errors() -> None:
    with pytest.raises(
        DataError, match=r"x and y have unequal lengths: x has shape \(3, 2\), y has shape \(4, 1\)"
    ):
        SharedSplit(torch.zeros(3, 2), torch.zeros(4, 1))
    with pytest.raises(DataError, match="SharedSplit.x must be float32, got torch.float64"):
        SharedSplit(torch.zeros(3, 2, dtype=torch.float64), torch.zeros(3, 1))
    with pytest.raises(DataError, match="labels contain NaN"):
        PerTaskSplit((torch.zeros(2, 1),), (torch.tensor([0.0, NAN]),))
    with pytest.raises(DataError, match="2 input tensors but 1 label tensors"):
        PerTaskSplit((torch.zeros(2, 1), torch.zeros(2, 1)), (torch.zeros(2),))


def test_shared_batches_in_order_keep_last_partial_batch() -> None:
    split = shared(10)
    batches = list(shared_batches(split, 4, shuffle=False))
    assert [len(x) for x, _ in batches] == [4, 4, 2]
    assert torch.equal(torch.cat([x for x, _ in batches]), split.x)
    assert batches[0][0].data_ptr() == split.x.data_ptr()  # a view, no copy


def test_shared_batches_shuffled_is_a_seeded_permutation() -> None:
    split = shared(10)
    run = [
        torch.cat(
            [
                y
                for _, y in shared_batches(
                    split, 3, shuffle=True, generator=torch.Generator().manual_seed(s)
                )
            ]
        )
        for s in (1, 1, 2)
    ]
    xs = torch.cat(
        [
            x
            for x, _ in shared_batches(
                split, 3, shuffle=True, generator=torch.Generator().manual_seed(1)
            )
        ]
    )
    assert torch.equal(run[0], run[1])
    assert sorted(xs[:, 0].tolist()) == split.x[:, 0].tolist()
    with pytest.raises(ConfigError, match="batch_size must be an integer >= 1, got batch_size=0"):
        next(shared_batches(split, 0, shuffle=False))


def test_per_task_batches_stack_tasks_and_cycle() -> None:
    split = per_task((5, 2))
    gen = torch.Generator().manual_seed(0)
    batches = list(per_task_batches(split, 3, steps=4, generator=gen))
    assert len(batches) == 4
    for x, y in batches:
        assert x.shape == (2, 3, 1, 2, 2) and y.shape == (2, 3)
        assert torch.all(x[0] == 0) and torch.all(x[1] == 1)  # task t gets its own examples
    # Task 0 (5 examples, B=3): 4 steps = 12 draws cover every example at least twice.
    seen = torch.cat([x[0, :, 0, 0, 0] for x, _ in batches])
    assert seen.numel() == 12
    # An epoch is a permutation: the first 5 draws of task 0 are its 5 examples.
    split_ids = PerTaskSplit((torch.arange(5.0).reshape(5, 1),), (torch.zeros(5),))
    draws = torch.cat(
        [x[0, :, 0] for x, _ in per_task_batches(split_ids, 5, steps=3, generator=gen)]
    )
    for epoch in range(3):
        assert sorted(draws[epoch * 5 : epoch * 5 + 5].tolist()) == [0, 1, 2, 3, 4]
    with pytest.raises(DataError, match=r"tasks \[1\] have no examples"):
        next(per_task_batches(per_task((3, 0)), 2, steps=1, generator=gen))


def test_task_batches_skip_missing_labels() -> None:
    split = shared(6)
    split.y[[1, 4], 1] = NAN
    xs, ys = zip(*task_batches(split, 1, 2), strict=True)
    assert [len(y) for y in ys] == [2, 2]
    assert torch.cat(xs)[:, 0].tolist() == [0.0, 6.0, 9.0, 15.0]
    full = list(task_batches(split, 0, 4))
    assert [len(y) for _, y in full] == [4, 2]
    pt = per_task((5, 2))
    assert [len(y) for _, y in task_batches(pt, 0, 2)] == [2, 2, 1]
    with pytest.raises(ConfigError, match="task_index must be in 0..1, got 2"):
        next(task_batches(pt, 2, 2))


def test_from_per_task_arrays() -> None:
    rng = np.random.default_rng(0)
    tasks = [TaskSpec("a", "binary"), TaskSpec("b", "multiclass", n_classes=3)]
    data = from_per_task_arrays(
        "toy",
        tasks,
        x=[rng.random((40, 1, 8, 8)), rng.random((30, 1, 8, 8))],
        y=[np.arange(40) % 2, np.arange(30) % 3],
    )
    assert data.input_shape == (1, 8, 8)
    assert data.train.sizes() == (28, 21)
    assert data.val.sizes() == (6, 4)
    assert data.test.sizes() == (6, 5)
    given = from_per_task_arrays(
        "toy",
        tasks[:1],
        x=[np.zeros((3, 2))],
        y=[np.array([0, 1, 0])],
        split=[["train", "test", "validation"]],
    )
    assert (given.train.sizes(), given.val.sizes(), given.test.sizes()) == ((1,), (1,), (1,))
    with pytest.raises(
        DataError, match=r"task 'b': input shape \(3,\) differs from the first task's \(2,\)"
    ):
        from_per_task_arrays(
            "toy", tasks, x=[np.zeros((3, 2)), np.zeros((3, 3))], y=[np.zeros(3), np.zeros(3)]
        )
    with pytest.raises(DataError, match=r"task 'a': inputs and labels have unequal lengths"):
        from_per_task_arrays("toy", tasks[:1], x=[np.zeros((3, 2))], y=[np.zeros(4)])
    with pytest.raises(DataError, match="task 'a': inputs contain 1 NaN/inf values"):
        from_per_task_arrays("toy", tasks[:1], x=[np.array([[np.inf], [0.0]])], y=[np.zeros(2)])


def test_a_study_needs_labels_of_every_task_in_every_split_and_two_binary_classes() -> None:
    x = torch.randn(6, 2)
    y = torch.tensor([[1.0, 0.5], [0.0, 0.1], [1.0, 0.2], [0.0, 0.3], [1.0, 0.4], [0.0, 0.5]])
    specs = (TaskSpec("a", "binary"), TaskSpec("b", "regression"))
    ok = MultiTaskData("t", specs, (2,), *(SharedSplit(x, y) for _ in range(3)))
    ok.check_complete()
    no_val = y.clone()
    no_val[:, 1] = float("nan")
    data = MultiTaskData(
        "t", specs, (2,), SharedSplit(x, y), SharedSplit(x, no_val), SharedSplit(x, no_val)
    )
    with pytest.raises(
        DataError,
        match=r"task 'b' has no labelled rows in the val and test "
        r"splits \(labelled train/val/test: 6/0/0\)",
    ):
        data.check_complete()
    one_class = y.clone()
    one_class[:, 0] = 1.0
    data = MultiTaskData(
        "t", specs, (2,), SharedSplit(x, one_class), SharedSplit(x, y), SharedSplit(x, y)
    )
    with pytest.raises(DataError, match="binary task 'a' has only label 1 in the training split"):
        data.check_complete()
