FROM alpine:latest AS build
RUN apk add hugo
COPY . /site
RUN hugo --minify -s /site

FROM nginx:alpine
COPY --from=build /site/public /usr/share/nginx/html
