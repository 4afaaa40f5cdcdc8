"""Settings of the recycling service (environment variables; see the README's configuration table).

LLM_BASE_URL + LLM_MODEL switch grounded answers from a model on (any OpenAI-compatible server:
OpenAI, vLLM, Ollama's /v1); without them every answer comes from the rules alone.
"""

from functools import lru_cache

from pydantic import Field, SecretStr

from ecosort_common.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "recycling"

    # How often each replica checks whether a newer knowledge base was loaded.
    knowledge_refresh_seconds: float = Field(default=30.0, gt=0)
    # Load the packaged data files at start-up when they are newer than the database's.
    knowledge_autoload: bool = True

    llm_base_url: str | None = None
    llm_model: str | None = None
    # Ollama and vLLM accept any key; OpenAI needs a real one.
    llm_api_key: SecretStr = SecretStr("not-needed")
    llm_timeout_seconds: float = Field(default=8.0, gt=0)
    llm_max_output_tokens: int = Field(default=600, gt=0)
    # Tokens (prompt + completion, as the server reports them) all users may spend per UTC day.
    llm_daily_token_budget: int = Field(default=200_000, ge=0)
    # One user's share of it per UTC day, so that one person (or a stolen token) cannot spend
    # everyone's day within the rate limit: at least five questions (four of the longest) even
    # if each kept its whole reservation (the README's "Feedback with a model" has the
    # arithmetic).
    llm_daily_tokens_per_user: int = Field(default=10_000, ge=0)

    feedback_rate_limit_per_minute: int = Field(default=10, gt=0)
    feedback_cache_seconds: int = Field(default=86_400, gt=0)

    @property
    def llm_enabled(self) -> bool:
        return bool(self.llm_base_url and self.llm_model)


@lru_cache
def get_settings() -> Settings:
    return Settings()
