// Relative asset URLs: the built page is served under any path of the service's origin.
export default { base: './', logLevel: 'warn', build: { target: 'es2022' } };
