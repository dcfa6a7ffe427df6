"""The mixing core (torch only): pure functions, the plan, mix points, cut graphs and the mixer.

- :mod:`.functional`: the math (``mix``, ``mix_value``, ``box_mask``), no state.
- :mod:`.plan`: :class:`~.plan.MixPlan`, one draw per step from the mixer's generator.
- :mod:`.points`: which cuts a model offers, from the model's own description.
- :mod:`.graph`: the state at a cut as the live set of a traced forward graph.
- :mod:`.attachment`: how a mixer lives on the user's model (forward routing, copies, wrappers, compile).
- :mod:`.mixer`: :class:`~.mixer.ManifoldMixup`.
"""
