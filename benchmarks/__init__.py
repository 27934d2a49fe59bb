"""The benchmarks (`manage.py bench_invoice_run`, `manage.py bench_ingest`): outside the product apps,
which never import them. Each builds and drops a database of its own, through benchmarks.database."""
