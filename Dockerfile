# Multi-stage: build a wheel-complete virtualenv, then copy it into a slim runtime image.
FROM python:3.11-slim AS build
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY pyproject.toml README.md ./
COPY app ./app
RUN pip install --no-cache-dir --upgrade pip && pip install --no-cache-dir .

FROM python:3.11-slim AS runtime
RUN useradd --create-home --uid 10001 ledger
COPY --from=build /opt/venv /opt/venv
WORKDIR /srv
# Migrations are applied at start by `loyalty-ledger serve`; they need these files.
COPY alembic.ini ./
COPY migrations ./migrations
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER ledger
EXPOSE 8000
# DATABASE_URL must be set: the container never starts an embedded PostgreSQL of its own.
CMD ["loyalty-ledger", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2", "--no-access-log"]
