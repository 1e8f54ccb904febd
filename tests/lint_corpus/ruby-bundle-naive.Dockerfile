FROM ruby:3.3-slim
WORKDIR /app
COPY . .
RUN bundle install --without development test
RUN apt-get update && apt-get install -y --no-install-recommends nodejs
EXPOSE 3000
CMD ["bundle", "exec", "puma"]
