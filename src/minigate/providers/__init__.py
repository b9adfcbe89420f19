"""Provider clients. Each provider is pure build/parse code plus one ``send`` over an injected httpx client."""
