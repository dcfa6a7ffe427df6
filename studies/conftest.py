"""pytest set-up of the study drivers' tests (``make study-test``; ``make test`` never collects them).

The drivers are scripts, run as ``python studies/study.py``, which puts ``studies/`` first on the
import path. pytest does the same for its tests: this folder has no ``__init__.py``, so pytest's
default ``prepend`` import mode puts it on ``sys.path`` when it loads this conftest, and the tests
import the drivers by their script names (``import study``, ``import study_regimes``).
"""
