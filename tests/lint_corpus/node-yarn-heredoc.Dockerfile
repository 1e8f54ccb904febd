# syntax=docker/dockerfile:1.4
FROM node:20-bookworm-slim
WORKDIR /home/node/app
COPY package.json yarn.lock ./
RUN <<EOT
set -eux
yarn install --frozen-lockfile --production
yarn cache clean
EOT
COPY --chown=node:node . .
USER node
CMD ["node", "server.js"]
