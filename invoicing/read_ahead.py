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
When another run is claiming at the same time, the rows after this run's batch are usually that
run's: the run does not guess then (the runs find each other through a shared advisory lock),
and if guesses keep missing all the same, it stops guessing.

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
# Each run that reads ahead holds this advisory lock, shared, on its reading connection for as
# long as it runs (PostgreSQL drops it with the connection, even after a crash): the number of
# holders is the number of such runs at the moment, on any host. While another run is claiming,
# the rows after this run's batch are mostly the other run's, so guessing them would only cost.
RUNS_LOCK = 0x696E766F6963  # any fixed bigint; "invoic"


class UsageReadAhead:
    """One thread with one database connection, for one invoice run. `guess` runs in that thread
    and returns {question: quantity} for the batch the run will probably claim next."""

    def __init__(self):
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="invoice-run-read-ahead")
        # First, before this run's first claim, so that runs started together see each other.
        self._executor.submit(_join_the_runs)
        self._pending: Future | None = None
        self.enabled = True
        self.answered = 0  # questions of claimed batches answered ahead (for the run's record)

    @staticmethod
    def available() -> bool:
        """SQLite lets a writer commit only once no reader is reading: a reading thread would
        only make the run wait for it."""
        return connection.vendor == "postgresql"

    def start(self, guess, *args) -> None:
        """Run `guess(*args)` -> {question: quantity} in the reading thread, unless guessing
        stopped or another run is claiming right now."""
        if self.enabled:
            self._pending = self._executor.submit(_if_alone, guess, *args)

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
        if guessed is None:  # another run was claiming: not guessed, not a miss either
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


def _join_the_runs() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock_shared(%s)", [RUNS_LOCK])


def runs_reading_ahead() -> int:
    """How many runs hold RUNS_LOCK in this database now (this one included, once it joined)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND classid = %s AND objid = %s AND objsubid = 1",
            [RUNS_LOCK >> 32, RUNS_LOCK & 0xFFFFFFFF],
        )
        return cursor.fetchone()[0]


def _if_alone(guess, *args):
    return guess(*args) if runs_reading_ahead() <= 1 else None


def _close_this_threads_connection() -> None:
    # `connection` stands for the calling thread's connection: looked up here, in the reading
    # thread, it is the read-ahead's own (a bound `connection.close` would be the submitter's).
    connection.close()
