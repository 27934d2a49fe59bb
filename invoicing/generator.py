"""The invoice run's former home, kept so that `from invoicing.generator import InvoiceGenerator`
still works: the run is `invoicing.run`."""

from invoicing.run import (
    BATCH_SIZE,
    MAX_LINES_PER_BATCH,
    MAX_PERIODS_PER_SUBSCRIPTION,
    InvoiceGenerator,
    RunResult,
)

__all__ = [
    "BATCH_SIZE",
    "MAX_LINES_PER_BATCH",
    "MAX_PERIODS_PER_SUBSCRIPTION",
    "InvoiceGenerator",
    "RunResult",
]
