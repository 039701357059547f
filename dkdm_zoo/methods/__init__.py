"""Distillation methods: turn teacher outputs into the student's loss, step by step."""
