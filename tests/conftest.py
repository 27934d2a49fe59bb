import logging
import logging.handlers
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from django.conf import settings
from django.db import connection
from django.test import override_settings

WORKERS = ("invoice_generator", "invoice_finalizer")


def pytest_collection_modifyitems(config, items):
    """Tests marked `postgres` need row locks and real concurrency; SQLite has neither."""
    if connection.vendor == "postgresql":
        return
    skip = pytest.mark.skip(reason="needs PostgreSQL: set DATABASE_URL=postgres://...")
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def invoice_run_in_this_process():
    """`call_command("generate_invoices")` runs in the test's process: on PostgreSQL it would
    otherwise start INVOICE_RUN_WORKERS processes, which cannot see the test's transaction (nor
    its monkeypatches). Tests of the worker processes start `manage.py` as a real process."""
    with override_settings(INVOICE_RUN_WORKERS=1):
        yield


@pytest.fixture(scope="session", autouse=True)
def worker_log_dir(tmp_path_factory):
    """The workers' rotating log files, moved to a temporary LOG_DIR for the test session, so
    tests never write into the developer's logs/ and can read what the configured handler wrote."""
    log_dir = tmp_path_factory.mktemp("logs")
    (log_dir / "workers").mkdir()
    # Readers of the logs (the admin's run page) look in settings.LOG_DIR: keep them in step.
    log_dir_setting = override_settings(LOG_DIR=log_dir)
    log_dir_setting.enable()
    moved = []
    for worker in WORKERS:
        for handler in logging.getLogger(f"worker.{worker}").handlers:
            if isinstance(handler, logging.handlers.RotatingFileHandler):
                handler.close()
                moved.append((handler, handler.baseFilename))
                handler.baseFilename = str(log_dir / "workers" / f"{worker}.log")
    yield log_dir
    for handler, original in moved:
        handler.close()
        handler.baseFilename = original
    log_dir_setting.disable()


class _Lines(logging.Handler):
    def __init__(self, formatter):
        super().__init__()
        self.setFormatter(formatter)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(self.format(record))


@pytest.fixture
def worker_lines():
    """The worker log lines exactly as the configured console handler formats them."""
    loggers = [logging.getLogger(f"worker.{worker}") for worker in WORKERS]
    console = next(h for h in loggers[0].handlers if h.name == "worker_console")
    capture = _Lines(console.formatter)
    for f in console.filters:
        capture.addFilter(f)
    for logger in loggers:
        logger.addHandler(capture)
    yield capture.lines
    for logger in loggers:
        logger.removeHandler(capture)


@pytest.fixture(scope="session", autouse=True)
def errors_log_dir(worker_log_dir):
    """The errors file (LOG_DIR/errors.log, root logger) moves with the workers' logs for the session."""
    moved = []
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.handlers.RotatingFileHandler):
            handler.close()
            moved.append((handler, handler.baseFilename))
            handler.baseFilename = str(worker_log_dir / "errors.log")
    yield
    for handler, original in moved:
        handler.close()
        handler.baseFilename = original


# The live gunicorn server of the HTTP tests (tests/api/test_live_server.py and the hostile ones).
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(transactional_db, tmp_path):
    db = connection.settings_dict
    url = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    port = free_port()
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("gunicorn")), "billing_project.wsgi:application",
         "--bind", f"127.0.0.1:{port}", "--workers", "2", "--log-level", "warning"],
        cwd=settings.BASE_DIR,
        env={**os.environ, "DATABASE_URL": url, "DEBUG": "False", "SECRET_KEY": "live-test-key",
             "ALLOWED_HOSTS": "127.0.0.1", "LOG_DIR": str(tmp_path), "SECURE_SSL_REDIRECT": "False"},
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}/api/v1"
    try:
        for _ in range(150):
            try:
                requests.get(f"{base}/workers/health", timeout=5)
                break
            except requests.RequestException:
                assert process.poll() is None, "gunicorn exited"
                time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)
