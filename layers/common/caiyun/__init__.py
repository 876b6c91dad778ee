"""彩云居家 shared layer: runtime, domain rules and adapters used by every cloud function."""
