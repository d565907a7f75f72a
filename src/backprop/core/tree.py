"""Trees of arrays: the parameters ((W, b), ...) and the optimizer states, as nested tuples.

A tree is an array (a leaf), or a tuple or list of trees; a ``NamedTuple`` (an optimizer's state)
is a tuple whose type is kept.  JAX treats the same nesting as its own pytrees, so a tree can be
passed through ``jax.jit``.  Everything that walks a tree walks it here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Tree = Any  # an array, or a tuple/list of Trees


def _is_node(tree: Tree) -> bool:
    return isinstance(tree, (tuple, list))


def tree_node(like: Tree, children) -> Tree:
    """A node of ``like``'s kind with ``children``: a NamedTuple keeps its type, the rest become tuples."""
    return type(like)(*children) if hasattr(like, "_fields") else tuple(children)


def tree_leaves(tree: Tree) -> list:
    """The arrays of a tree, depth first."""
    if _is_node(tree):
        return [leaf for child in tree for leaf in tree_leaves(child)]
    return [tree]


def tree_map(fn: Callable, tree: Tree, *rest: Tree) -> Tree:
    """``fn`` applied leaf by leaf to trees of the same nesting (the first tree's node types are kept)."""
    if _is_node(tree):
        if any(not _is_node(r) or len(r) != len(tree) for r in rest):
            raise ValueError("tree_map: the trees do not have the same nesting")
        return tree_node(tree, (tree_map(fn, *children) for children in zip(tree, *rest)))
    return fn(tree, *rest)


def tree_flatten(tree: Tree) -> tuple[list, Any]:
    """The leaves of a tree, in order, and its structure as JSON: nested lists, 0 for a leaf."""
    if _is_node(tree):
        leaves, structure = [], []
        for child in tree:
            child_leaves, child_structure = tree_flatten(child)
            leaves += child_leaves
            structure.append(child_structure)
        return leaves, structure
    return [tree], 0


def tree_unflatten(structure: Any, leaves: list, like: Tree = None) -> Tree:
    """The tree that `tree_flatten` described, from its leaves; the node types of ``like`` (a tree of
    the same structure, such as a fresh optimizer state) are kept.  ValueError when the structure
    is not nested lists of 0s, or the number of leaves does not match."""
    it = iter(leaves)

    def build(node, template, depth):
        if depth > 64:
            raise ValueError("the tree structure is nested too deeply")
        if node == 0 and not isinstance(node, bool):
            try:
                return next(it)
            except StopIteration:
                raise ValueError("the tree structure has more leaves than were given") from None
        if not isinstance(node, list):
            raise ValueError(f"a tree structure is nested lists of 0s, got {node!r}")
        templates = template if _is_node(template) and len(template) == len(node) else [None] * len(node)
        children = [build(child, t, depth + 1) for child, t in zip(node, templates)]
        return tree_node(template, children) if _is_node(template) and len(template) == len(node) else tuple(children)

    tree = build(structure, like, 0)
    if next(it, None) is not None:
        raise ValueError("the tree structure has fewer leaves than were given")
    return tree
