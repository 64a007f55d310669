"""Self-checks for the chapters' exercises, one module per chapter slug: each compares a learner's
answer with the reference and says *what* is wrong (shape, sign, a factor, which entries), not only
that it is wrong. All of them share one checker kit, :mod:`nnopt_lab.exercises.checks`."""
