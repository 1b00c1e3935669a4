"""The thin conductor: configuration, the `masters` CLI, the progressive loop, reports."""
