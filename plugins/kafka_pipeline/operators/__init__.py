"""Reusable operators: thin, templated shells around plain functions in include/."""
