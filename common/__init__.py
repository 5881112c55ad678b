"""Shared, paper-agnostic pieces of the monorepo: config, data, dist, log, checkpoint, runner, schedule, knn.

See README.md in this folder for the public API.
"""
