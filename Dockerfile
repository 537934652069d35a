# LeukoPortal image: web, workers and beat all run from it (docker-compose.yml picks the command).
FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    LEUKOPORTAL_VAR_DIR=/app/var MEDIA_ROOT=/app/media TORCH_HOME=/app/torch
RUN apt-get update && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    libldap2-dev libsasl2-dev gcc postgresql-client && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt
COPY . .
RUN DEBUG=true python manage.py collectstatic --noinput \
    && useradd --system --home /app leuko && mkdir -p var media torch && chown -R leuko var media torch
USER leuko
EXPOSE 8000
CMD ["gunicorn", "leukoportal.wsgi:application", "--preload", "--bind", "0.0.0.0:8000", "--workers", "3", "--timeout", "120"]
