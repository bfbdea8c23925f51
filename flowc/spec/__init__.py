"""The canonical spec models and the YAML/JSON front end."""
