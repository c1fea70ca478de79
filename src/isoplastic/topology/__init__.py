"""Structural changes (neurogenesis, neurodegeneration, resizing) and topology policies."""
