"""Bisection: the search (which step next, what the answer is), the executor that builds and tests each step, and the report."""
