"""The base-model store: models pulled, registered and converted on this machine."""
