"""Domain modules: the business rules and state machines, written once for every function."""
