"""Domain-free building blocks every app may import: money, command options, control characters,
SQL array parameters, shared migration operations. Nothing here imports an app."""
