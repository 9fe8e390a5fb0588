"""Request and response bodies of the topic endpoints."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from ...domain.topics import MAX_TOPIC_NAME
from .schemas import Strict, page_of


class TopicPut(Strict):
    name: str | None = Field(None, min_length=1, max_length=MAX_TOPIC_NAME,
                             description="display name; left out it is kept, null clears it")


class TopicOut(BaseModel):
    key: str
    name: str | None
    created_at: datetime
    updated_at: datetime


class TopicDetail(TopicOut):
    subscribers: int = Field(description="how many users are subscribed")


class SubscriptionOut(BaseModel):
    topic: str
    user_id: str


class SubscriberOut(BaseModel):
    user_id: str
    subscribed_at: datetime


class UserTopicOut(BaseModel):
    topic: str
    subscribed_at: datetime


TopicPage = page_of(TopicOut, "TopicPage")
SubscriberPage = page_of(SubscriberOut, "SubscriberPage")
UserTopicPage = page_of(UserTopicOut, "UserTopicPage")
