"""Faster forms of the math: which one belongs to which equation.

A class states its math in one method (an optimizer's ``_step``, a loss's ``__call__``) and may
carry a faster form of the same math beside it (``_step_inplace``, ``delta_into``).  A subclass
that restates the math without restating the faster form must not inherit a faster form written
for its parent's math: it runs its own.
"""

from __future__ import annotations


def own_form(obj, math: str, form: str):
    """``obj``'s attribute ``form`` when it was written for the ``math`` that ``obj`` runs, else None.

    The form counts when the class that defines it in ``type(obj)``'s MRO is the class that defines
    ``math``, or a subclass of it (it was written after the math it speeds up).
    """
    mro = type(obj).__mro__
    math_owner = next((k for k in mro if math in vars(k)), None)
    form_owner = next((k for k in mro if form in vars(k)), None)
    if math_owner is None or form_owner is None or not issubclass(form_owner, math_owner):
        return None
    return getattr(obj, form)
