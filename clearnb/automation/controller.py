"""ClearML's ``clearml.automation.controller`` path: the pipeline controller and decorator."""

from __future__ import annotations

from clearnb.pipeline.controller import PipelineController
from clearnb.pipeline.decorator import PipelineDecorator

__all__ = ["PipelineController", "PipelineDecorator"]
