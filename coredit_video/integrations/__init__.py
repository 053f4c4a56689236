"""Seams into host training stacks (imported only when their host is present)."""
