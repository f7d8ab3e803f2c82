FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY worker ./worker
COPY migrations ./migrations
RUN pip install --no-cache-dir -e . && useradd --create-home imgmod
USER imgmod
ENTRYPOINT ["imgmod"]
CMD ["--help"]
