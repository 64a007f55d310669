"""Self-checks for the chapters' exercises: each compares a learner's answer with the reference
and says *what* is wrong (shape, sign, a factor, which entries), not only that it is wrong."""
