"""sbi_core: the library that runs inside every pipeline step (pods and local processes).

It never imports airflow; heavy backends (torch, jax, mlflow) are imported lazily by the
modules that need them, so `import sbi_core` stays cheap.
"""

__version__ = "0.1.0"
