"""One step from captured traffic to a gated student: ``distillery distill --prompt NAME``.

:mod:`plan` reads a prompt's stored completions (accepted corrections in place of the teacher's
answers), checks them against the prompt's response format and infers the graders;
:mod:`pipeline` snapshots them as a dataset, baselines the teacher and the base student on its
frozen test split, fine-tunes with the automatic recipe, evaluates the student, compares it with
the teacher (bootstrap intervals) and creates the prompt's route in ``shadow`` with that
comparison as its gate; :mod:`report` is the account of it all.
"""
