FROM python:3.12-slim AS build
WORKDIR /app
COPY requirements.txt .
RUN pip install --target=/app/deps -r requirements.txt
COPY . .

FROM gcr.io/distroless/python3-debian12
COPY --from=build /app /app
ENV PYTHONPATH=/app/deps
CMD ["/app/main.py"]
