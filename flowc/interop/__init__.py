"""Interop with the ecosystem: Prompt flow import (`promptflow/`), DSPy export (`dspy/`).

Each conversion maps what it can, refuses the rest with a located diagnostic, and is documented in
docs/interop.md. The optional libraries (dspy, gepa) are imported only inside the modules that need
them, so `import flowc.interop` costs nothing.
"""
