"""ClearML's ``clearml.automation`` path: the pipeline facades under the names ClearML
users import them by (``from clearnb.automation import PipelineController``)."""

from __future__ import annotations

from clearnb.automation.controller import PipelineController, PipelineDecorator

__all__ = ["PipelineController", "PipelineDecorator"]
