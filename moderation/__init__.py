"""Text moderation for voicebot (being written)."""
