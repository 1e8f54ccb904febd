# syntax=docker/dockerfile:1
FROM node:20.12-alpine
WORKDIR /app
ENV NPM_TOKEN_FILE=/run/secrets/npm_token
COPY package.json package-lock.json ./
RUN --mount=type=secret,id=npmrc,target=/root/.npmrc \
    npm ci --omit=dev && npm cache clean --force
COPY . .
USER node
CMD ["node", "index.js"]
