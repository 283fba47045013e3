# The studio image: web, worker, beat and emulator all run from it with different commands.
FROM node:20-slim AS assets
WORKDIR /src
COPY package.json package-lock.json .npmrc ./
COPY scripts/vendor.js scripts/vendor.js
RUN npm ci --no-audit --no-fund

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 DATA_DIR=/data
WORKDIR /app
COPY requirements/main.txt requirements/main.txt
RUN pip install --no-cache-dir -r requirements/main.txt
COPY . .
COPY --from=assets /src/static/vendor static/vendor
RUN pip install --no-cache-dir --no-deps -e . \
    && useradd --create-home --uid 10001 studio \
    && mkdir -p /data && chown studio /data
USER studio
EXPOSE 8000
CMD ["studio", "web", "--host", "0.0.0.0", "--port", "8000"]
