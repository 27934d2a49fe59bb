"""Reading the next batch's usage ahead, on a connection of its own (PostgreSQL).

A batch's usage aggregation is the run's longest statement, and while it runs the run has
nothing else to do; while the run prices, writes and commits, the aggregation could run but has
nothing to work on. With one worker that leaves one of the machine's cores idle most of the time.
So as soon as batch N's usage is known, a thread guesses batch N+1 -- the due subscriptions that
come after batch N in the claim order, read without locking anything -- and aggregates their usage
on its own connection, while the run goes on with batch N.

The guess only answers questions; it never decides what is billed. The run still claims batch
N+1 itself (FOR UPDATE SKIP LOCKED) and uses an answer only for the identical question
(customer, meter, aggregation, period, subscription); whatever the guess missed -- rows another
run claimed, a period that moved -- is aggregated in the claiming transaction, as without it.
When guesses keep missing (several runs share the work, so the next rows in the order are
usually another run's), the run stops guessing.

An answer read ahead was read one batch earlier than the claim, a fraction of a second: usage
that arrives in between is treated like usage that arrives just after a run's aggregation, and
reaches the draft when finalization refreshes it.
"""

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from decimal import Decimal

from django.db import connection

from metering.selectors import UsageQuestion

log = logging.getLogger(__name__)

# Below this share of a claimed batch's questions answered ahead, guessing costs the database
# more than it saves: the run stops reading ahead.
WORTHWHILE_HIT_RATE = 0.5


class UsageReadAhead:
    """One thread with one database connection, for one invoice run. `guess` runs in that thread
    and returns {question: quantity} for the batch the run will probably claim next."""

    def __init__(self):
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="invoice-run-read-ahead")
        self._pending: Future | None = None
        self.enabled = True
        self.answered = 0  # questions of claimed batches answered ahead (for the run's record)

    @staticmethod
    def available() -> bool:
        """SQLite lets a writer commit only once no reader is reading: a reading thread would
        only make the run wait for it."""
        return connection.vendor == "postgresql"

    def start(self, guess, *args) -> None:
        if self.enabled:
            self._pending = self._executor.submit(guess, *args)

    def answers_for(self, questions: list[UsageQuestion]) -> dict[UsageQuestion, Decimal]:
        """The answers read ahead for these questions (waiting for the guess if it is still
        running); an empty dict when nothing was read ahead or the guess failed."""
        pending, self._pending = self._pending, None
        if pending is None:
            return {}
        try:
            guessed = pending.result()
        except Exception as exc:  # a guess is an optimisation: the run aggregates in-line instead
            log.warning("Usage read-ahead failed, the run aggregates in-line: %s", exc)
            self.enabled = False
            return {}
        answers = {q: guessed[q] for q in questions if q in guessed}
        self.answered += len(answers)
        if questions and len(answers) < WORTHWHILE_HIT_RATE * len(questions):
            self.enabled = False
        return answers

    def close(self) -> None:
        """Wait for a guess still running, then close the thread's connection."""
        self._pending = None
        try:
            self._executor.submit(_close_this_threads_connection).result()
        except Exception as exc:  # the run's own outcome matters more than a reader's goodbye
            log.warning("Usage read-ahead: could not close its connection: %s", exc)
        self._executor.shutdown(wait=True)


def _close_this_threads_connection() -> None:
    # `connection` stands for the calling thread's connection: looked up here, in the reading
    # thread, it is the read-ahead's own (a bound `connection.close` would be the submitter's).
    connection.close()
