"""The TARDIS method as pure functions over tensors (METHOD.md §1–3)."""
