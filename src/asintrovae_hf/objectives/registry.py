"""The objectives by name: each method is a class that says what the rest of the package needs to know about it,
registered once under its name.

The command line (`--objective` choices), [`ObjectiveConfig`] validation, the model card, the per-dataset defaults
and the benchmarks read this registry when they run, so an objective registered later (a plugin, a test) is usable
everywhere the built-in ones are. The built-in objectives register when `asintrovae_hf.objectives` is imported.
"""

from typing import Any, Dict, Tuple, Type

__all__ = ["get_objective", "objective_dataset_defaults", "objective_names",
           "register_objective", "unregister_objective"]

_OBJECTIVES: Dict[str, Type] = {}


def register_objective(objective_class: Type) -> Type:
    """
    Register an [`IntrospectiveObjective`] subclass under its `name` (also a class decorator). The class sets
    `name`, `display_name`, `description`, and where they differ from the base class `defaults` (per dataset),
    `is_introspective` and `uses_c`.

    ```py
    @register_objective
    class MyVAEObjective(IntrospectiveObjective):
        name, display_name, description = "my-vae", "My VAE", "A VAE with ..."
        is_introspective = False
    ```
    """
    name = objective_class.name
    if not name or name in _OBJECTIVES:
        raise ValueError(f"Cannot register {objective_class.__name__} as {name!r}: the name is empty or taken.")
    _OBJECTIVES[name] = objective_class
    return objective_class


def unregister_objective(name: str) -> Type:
    """Remove the objective `name` from the registry and return its class."""
    get_objective(name)  # refuses an unknown name, naming the choices
    return _OBJECTIVES.pop(name)


def objective_names() -> Tuple[str, ...]:
    """The names of the registered objectives, in the order they registered."""
    return tuple(_OBJECTIVES)


def get_objective(name: str) -> Type:
    """The class registered as `name`; a `ValueError` naming the choices when there is none."""
    if name not in _OBJECTIVES:
        raise ValueError(f"objective must be one of {objective_names()}, got {name!r}.")
    return _OBJECTIVES[name]


def objective_dataset_defaults(dataset: str) -> Dict[str, Dict[str, Any]]:
    """`{objective name: its option defaults on dataset}` for the objectives that have any there."""
    return {name: dict(cls.defaults[dataset]) for name, cls in _OBJECTIVES.items() if cls.defaults.get(dataset)}

