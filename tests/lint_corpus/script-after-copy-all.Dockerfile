FROM python:3.12-slim
WORKDIR /src
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . /src
RUN sh /src/scripts/download-models.sh
RUN python -m compileall -q /src
USER 10001
