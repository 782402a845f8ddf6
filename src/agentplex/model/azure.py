"""Azure OpenAI: :class:`AzureOpenAIChatModel`, the OpenAI model with Azure's client."""

from __future__ import annotations

import os
from typing import Any

from .openai import OpenAIChatModel

__all__ = ["AzureOpenAIChatModel"]


class AzureOpenAIChatModel(OpenAIChatModel):
    """A deployment on Azure OpenAI (same wire schema as OpenAI, Azure's URLs and auth).

    Args:
        model_name: the deployment name (``azure_deployment`` defaults to it).
        azure_endpoint: defaults to ``AZURE_OPENAI_ENDPOINT``.
        api_key: defaults to ``AZURE_OPENAI_API_KEY``.
        api_version: defaults to ``OPENAI_API_VERSION``, else ``2024-10-21``.
        azure_deployment: the deployment, when it differs from ``model_name``.
        **kwargs: everything :class:`OpenAIChatModel` takes (``stream``,
            ``reasoning_effort``, ``client_args``, ``generate_kwargs``, ``max_retries``, ...).
    """

    provider = "azure_openai"

    def __init__(
        self,
        model_name: str,
        api_key: str | None = None,
        *,
        azure_endpoint: str | None = None,
        api_version: str | None = None,
        azure_deployment: str | None = None,
        **kwargs: Any,
    ) -> None:
        self._azure = {
            "azure_endpoint": azure_endpoint or os.environ.get("AZURE_OPENAI_ENDPOINT"),
            "api_version": api_version or os.environ.get("OPENAI_API_VERSION", "2024-10-21"),
            "azure_deployment": azure_deployment or model_name,
        }
        kwargs.setdefault("max_tokens_param", "max_completion_tokens")
        super().__init__(model_name, api_key, **kwargs)

    def _make_client(
        self, api_key: str | None, organization: str | None, base_url: str | None,
        client_args: dict[str, Any] | None,
    ) -> Any:
        import openai

        if not self._azure["azure_endpoint"] and not base_url:
            raise ValueError("AzureOpenAIChatModel needs azure_endpoint "
                             "(or the AZURE_OPENAI_ENDPOINT environment variable)")
        token = (client_args or {}).get("azure_ad_token") or (client_args or {}).get(
            "azure_ad_token_provider") or os.environ.get("AZURE_OPENAI_AD_TOKEN")
        key = self._credential(api_key, "AZURE_OPENAI_API_KEY", required=not token)
        args = self._client_args(client_args, api_key=key, organization=organization,
                                 timeout=self.timeout, max_retries=0, **self._azure)
        if base_url:  # a full deployment URL instead of endpoint + deployment
            args.pop("azure_endpoint")
            args.pop("azure_deployment")
            args["base_url"] = base_url
        return openai.AsyncAzureOpenAI(**args)
