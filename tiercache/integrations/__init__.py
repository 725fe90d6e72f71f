"""Adapters that let other libraries use tiercache (each an optional extra).

Importing this package imports none of them: ``tiercache.integrations.langchain`` needs
``pip install 'tiercache[langchain]'``.
"""
