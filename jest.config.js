/** @type {import('jest').Config} */
module.exports = {
  preset: 'ts-jest',
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  transform: { '^.+\\.ts$': 'ts-jest' },
  testTimeout: 30000,
  // Refuses a run whose native addon is older than native/ (a merge does not rebuild it).
  globalSetup: '<rootDir>/test/helpers/native-fresh.js',
};
