FROM python:3.12
RUN apt-get update
RUN apt-get install -y libpq-dev
WORKDIR /srv
COPY requirements.txt .
RUN pip install -r requirements.txt
COPY . .
CMD ["python", "manage.py", "runserver", "0.0.0.0:8000"]
