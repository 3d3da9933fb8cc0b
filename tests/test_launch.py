"""bar.launch: the threads each rank computes with."""

import os


def test_threads_per_rank_shares_the_cores_unless_omp_num_threads_says(monkeypatch):
    from bar.launch import threads_per_rank

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert [threads_per_rank(n) for n in (1, 2, 3, 16)] == [8, 4, 2, 1]
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads_per_rank(2) == 3
