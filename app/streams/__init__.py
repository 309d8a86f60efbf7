"""Resumable streams (CONTRACT §13): answers that outlive their client, and the routes that re-attach or stop them."""

from __future__ import annotations

from app.streams.feature import ResumeFeature
from app.streams.live import LiveAnswer, LiveAnswers

__all__ = ("LiveAnswer", "LiveAnswers", "ResumeFeature")
