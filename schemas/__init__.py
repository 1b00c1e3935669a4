"""The single source of truth for the Gen-Data model: Arrow schemas, content-hash ids, typed
configs, the snapshot contract and the project's exceptions. Imports nothing of ours."""
