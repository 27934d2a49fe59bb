"""The workers' file handler: RotatingFileHandler's lines and rollover, formatting each line once."""

import logging

from invoicing.worker_log import RunLogFileHandler, UTCISOFormatter


class CountingFormatter(UTCISOFormatter):
    def __init__(self):
        super().__init__("[%(levelname)s] %(message)s")
        self.calls = 0

    def format(self, record):
        self.calls += 1
        return super().format(record)


def test_lines_roll_over_like_rotating_file_handler_and_are_formatted_once(tmp_path):
    path = tmp_path / "run.log"
    handler = RunLogFileHandler(path, maxBytes=100, backupCount=2, encoding="utf-8", delay=True)
    formatter = CountingFormatter()
    handler.setFormatter(formatter)
    logger = logging.getLogger("tests.run_log_handler")
    logger.propagate, logger.level = False, logging.INFO
    logger.addHandler(handler)
    try:
        for n in range(6):
            logger.info(f"✅ Generated INV-2025-{n:04d} | total=€1.00")  # 47 characters with its newline
    finally:
        logger.removeHandler(handler)
        handler.close()

    assert formatter.calls == 6
    # Two lines per file (a third would reach 100 bytes); the oldest file beyond backupCount is gone.
    assert path.read_text(encoding="utf-8").splitlines() == [
        "[INFO] ✅ Generated INV-2025-0004 | total=€1.00",
        "[INFO] ✅ Generated INV-2025-0005 | total=€1.00",
    ]
    assert (
        (tmp_path / "run.log.1")
        .read_text(encoding="utf-8")
        .splitlines()[0]
        .endswith("INV-2025-0002 | total=€1.00")
    )
    assert (
        (tmp_path / "run.log.2")
        .read_text(encoding="utf-8")
        .splitlines()[-1]
        .endswith("INV-2025-0001 | total=€1.00")
    )
    assert not (tmp_path / "run.log.3").exists()


def test_a_path_that_is_not_a_regular_file_never_rolls_over():
    handler = RunLogFileHandler("/dev/null", maxBytes=1, backupCount=1)
    handler.setFormatter(logging.Formatter("%(message)s"))
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "a line", (), None)
    try:
        assert handler.shouldRollover(record) is False
        handler.handle(record)
    finally:
        handler.close()
