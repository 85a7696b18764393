"""Plug-ins that make ASLFeat available inside other tools (hloc, ...), one module each."""
