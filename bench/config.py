"""Sizes of one benchmark run: the full run that publishes RESULTS.md, and the seconds-long smoke run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Config:
    """Every size, count and duration a run uses; nothing else in ``bench`` picks a number."""

    smoke: bool
    out_dir: Path
    work_dir: Path
    repetitions: int  # of every timed measurement; each figure is the median over them
    large_repetitions: int  # of the long measurements at the largest N (scale figures)
    drain_repetitions: int  # of the headline drain, the noisiest figure with a target
    enqueue_calls: int  # timed calls per repetition
    drain_tasks: int  # queued before the worker starts
    drain_scale: tuple[int, ...]  # extra drain sizes for the scale figures
    drain_c1_tasks: int  # drained by a one-process pool, next to the two-process figure at that N
    latency_samples: int
    http_connections: int
    http_duration_s: float
    http_warmup_s: float
    loop_lag_delay_s: float  # added to every answer of Redis (a delay proxy) in the loop-lag scenario
    loop_lag_duration_s: float
    loop_lag_light_connections: int  # a second, lighter load the loop can carry without saturating
    inprocess_async_tasks: tuple[int, ...]
    inprocess_sync_tasks: tuple[int, ...]
    async_io_tasks: int = 1000  # async tasks each awaiting async_io_seconds, in-process and on one Celery host
    async_io_seconds: float = 1.0
    async_io_concurrency: int = 100  # TASK_ASYNC_CONCURRENCY on both sides

    def repetitions_for(self, n: int, sizes: tuple[int, ...]) -> int:
        """Fewer repetitions for the longest run of a scale series (its largest N, from 10,000 up)."""
        return self.large_repetitions if n == max(sizes) and n >= 10_000 else self.repetitions

    @classmethod
    def full(cls, out_dir: Path, work_dir: Path) -> Config:
        return cls(
            smoke=False,
            out_dir=out_dir,
            work_dir=work_dir,
            repetitions=3,
            large_repetitions=1,
            drain_repetitions=5,
            enqueue_calls=2000,
            drain_tasks=5000,
            drain_scale=(1000, 10_000),
            drain_c1_tasks=1000,
            latency_samples=200,
            http_connections=50,
            http_duration_s=10.0,
            http_warmup_s=1.0,
            loop_lag_delay_s=0.02,
            loop_lag_duration_s=10.0,
            loop_lag_light_connections=10,
            inprocess_async_tasks=(1000, 10_000, 100_000),
            inprocess_sync_tasks=(1000, 10_000, 100_000),
        )

    @classmethod
    def smoke_run(cls, out_dir: Path, work_dir: Path) -> Config:
        return cls(
            smoke=True,
            out_dir=out_dir,
            work_dir=work_dir,
            repetitions=1,
            large_repetitions=1,
            drain_repetitions=1,
            enqueue_calls=50,
            drain_tasks=50,
            drain_scale=(),
            drain_c1_tasks=50,
            latency_samples=10,
            http_connections=8,
            http_duration_s=1.0,
            http_warmup_s=0.0,
            loop_lag_delay_s=0.02,
            loop_lag_duration_s=1.0,
            loop_lag_light_connections=4,
            inprocess_async_tasks=(200,),
            inprocess_sync_tasks=(100,),
            async_io_tasks=100,
            async_io_seconds=0.2,
        )
