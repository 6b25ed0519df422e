/** Unit tests of the pure modules (parser, writer, validation): plain ts-jest, node environment. */
module.exports = {
  preset: 'ts-jest',
  testEnvironment: 'node',
  roots: ['<rootDir>/src'],
  testMatch: ['**/__tests__/**/*.spec.ts'],
  transform: {
    '^.+\\.tsx?$': [
      'ts-jest',
      { tsconfig: { module: 'commonjs', types: ['jest', 'node'] } }
    ]
  }
};
